"""The validator role: stake, probe providers' endpoints each epoch, post one report per epoch."""
