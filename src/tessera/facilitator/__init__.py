"""The x402 facilitator as an HTTP service for one Tessera network (`tessera facilitator run`):
/verify, /settle and /supported over the logic in chain/x402_facilitator.py (docs/agents.md)."""
