"""Explorer: index chain events, compute figures anyone can recompute, audit them against the chain."""
