"""Studies run with the harness (each a package: its code beside the grids it sweeps). They
import harness; harness never imports them, and they are not part of the installed package:
run them from the checkout (`python -m studies.<study>.<module>`, as the Makefile does)."""
