"""The packaged offline EOL dataset (products.json); format in docs/eol-dataset.md."""
