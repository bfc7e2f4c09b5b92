"""``posswarm-seeder sku import FILE.csv``: load the chain's SKU catalog; the store caches pull the changes."""

from __future__ import annotations

from pathlib import Path

from posswarm.errors import PosswarmError
from seeder.sku import open_catalog, read_csv


def add_command(sub) -> None:
    sku = sub.add_parser("sku", help="central's SKU catalog")
    actions = sku.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="import code,barcode,name,price_cents,tax_class[,deleted] rows")
    imp.add_argument("file", type=Path)
    imp.add_argument("--data-dir", type=Path, help="the seeder's --data-dir (DATA_DIR/sku.sqlite)")
    imp.add_argument("--sku-db", default="", help="the seeders' --sku-db: SQLite path or postgresql://...")
    imp.add_argument("--replace", action="store_true", help="the file is the whole catalog: SKUs not in it are deleted")


def run(args) -> int:
    if not args.sku_db and args.data_dir is None:
        raise PosswarmError("sku import: name the catalog: --sku-db as the seeders have it (postgresql://... or a "
                            "file), or the seeder's --data-dir")
    rows = read_csv(args.file)
    catalog = open_catalog(args.sku_db or str(args.data_dir / "sku.sqlite"))
    try:
        result = catalog.import_rows(rows, replace=args.replace)
    finally:
        catalog.close()
    print(f"imported {args.file}: {result['rows']} rows, {result['changed']} changed"
          f" ({result['tombstoned_missing']} deleted as missing), {result['skus']} SKUs in the catalog")
    return 0
