"""TEST ONLY: fault injection for the end-to-end tests of verification and the demo's cheater.

Nothing in the production daemons imports this package. A real provider cannot be made to
cheat: `tessera provider run` has no setting for it. A cheating provider is started through its
own entry point, `python -m tessera.testing.cheating_provider --cheat NAME --config FILE`
(cheating_provider.py), which builds the ordinary ProviderNode with its DiLoCo workers run by
`tessera.testing.cheating_worker` instead of `tessera.compute.diloco_worker`; the cheats
themselves are in cheats.py. A cheating provider is caught by a spot check or a validator and
its stake is slashed.
"""
