# sdk/c/ — the C SDK (to be written).
