"""`python -m tailor.schemas [DIR]`: regenerate the published JSON Schemas (default: into this package)."""

import sys

from tailor.schemas import write_schemas

for path in write_schemas(sys.argv[1] if len(sys.argv) > 1 else None):
    print(path)
