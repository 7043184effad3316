"""x402 pay-per-request inference and the facilitator service, on a real anvil devnet."""
