"""The dashboard's one stylesheet, served at ``/style.css`` (the CSP allows styles from 'self' only)."""

STYLESHEET = """\
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; }
nav ul { list-style: none; margin: 0; padding: 0 1rem; display: flex; flex-wrap: wrap; }
nav a { display: block; padding: 0.7rem 0.9rem; color: #eceff1; text-decoration: none; }
nav a[aria-current="page"] { background: #455a64; font-weight: bold; }
main { padding: 1rem 1.5rem 3rem; max-width: 90rem; }
h1 { font-size: 1.5rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; }
table.data { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
table.data th, table.data td { border: 1px solid #cfd8dc; padding: 0.25rem 0.5rem; text-align: left;
  vertical-align: top; }
table.data th { background: #eceff1; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.25rem 1rem; }
dt { font-weight: bold; }
dd { margin: 0; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.85rem; }
pre { background: #eceff1; padding: 0.5rem; overflow-x: auto; white-space: pre-wrap; max-width: 60rem; }
.empty { color: #607d8b; font-style: italic; }
.note { color: #607d8b; font-size: 0.8rem; }
.warnings li { color: #b71c1c; }
.pager { font-size: 0.9rem; }
svg.chart { background: #fff; border: 1px solid #cfd8dc; max-width: 100%; height: auto; }
"""
