"""The demo: the whole pipeline on the synthetic world (above training and export: it uses both)."""
