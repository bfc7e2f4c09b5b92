"""``posswarm-seeder sku import FILE.csv``: load the chain's SKU catalog; the store caches pull the changes."""

from __future__ import annotations

from pathlib import Path

from seeder.sku import CentralCatalog, read_csv


def add_command(sub) -> None:
    sku = sub.add_parser("sku", help="central's SKU catalog")
    actions = sku.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="import code,barcode,name,price_cents,tax_class[,deleted] rows")
    imp.add_argument("file", type=Path)
    imp.add_argument("--data-dir", type=Path, required=True, help="the seeder's --data-dir (DATA_DIR/sku.sqlite)")
    imp.add_argument("--replace", action="store_true", help="the file is the whole catalog: SKUs not in it are deleted")


def run(args) -> int:
    rows = read_csv(args.file)
    catalog = CentralCatalog(str(args.data_dir / "sku.sqlite"))
    try:
        result = catalog.import_rows(rows, replace=args.replace)
    finally:
        catalog.close()
    print(f"imported {args.file}: {result['rows']} rows, {result['changed']} changed"
          f" ({result['tombstoned_missing']} deleted as missing), {result['skus']} SKUs in the catalog")
    return 0
