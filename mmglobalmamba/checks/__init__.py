"""Does a config run? Config checks (build the model, one forward on random data) and trial
runs (a few real train iterations on generated data, then an evaluation)."""
