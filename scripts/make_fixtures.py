#!/usr/bin/env python3
"""Regenerate every committed test fixture from the real Python libraries.

Run with the reference environment (see README "Regenerating fixtures"):

    /path/to/venv/bin/python scripts/make_fixtures.py

Each part is a standalone script under scripts/fixtures/ and can be run on its own. Order
matters: the exclip fixtures use the models and tokenizers made before them.
"""
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
PARTS = [
    "tokenizers.py", "images.py", "models.py", "exclip.py",
    "siglip_tokenizer.py", "gemma_tokenizer.py", "siglip.py",
]

for part in PARTS:
    script = HERE / "fixtures" / part
    print(f"== {script.relative_to(HERE.parent)}", flush=True)
    subprocess.run([sys.executable, str(script)], check=True)
