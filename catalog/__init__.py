"""Product catalog: features, versioned plans, rate cards, prices, entitlement templates, pricing engine."""
