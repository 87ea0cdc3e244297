"""DRF views of the metering app: they parse input and call one service or selector."""
