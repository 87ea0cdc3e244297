"""DRF views of the catalog app (the read API): they parse input and call one selector."""
