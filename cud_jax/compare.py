"""`python -m cud_jax.compare runs/*/ --out table.md`: see `cud_jax.evaluate.compare`."""

import sys

from cud_jax.evaluate.compare import main

if __name__ == "__main__":
    main(sys.argv[1:])
