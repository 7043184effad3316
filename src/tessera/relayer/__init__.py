"""The bridge relayer (docs/bridge.md): carries messages and committee signatures between chains."""
