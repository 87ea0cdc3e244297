"""DRF views of the customers app (the gateway's entitlement check): they parse input and call selectors."""
