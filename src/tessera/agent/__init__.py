"""An AI agent as a customer (layer 4): it rents training and buys inference, paying from the
on-chain budget its owner granted it (loop.py, buyer.py), and the owner's commands over that
budget (owner.py); `tessera agent ...` (cli.py). docs/agents.md, "An agent that rents training"."""
