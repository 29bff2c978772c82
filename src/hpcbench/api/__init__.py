"""The contract every layer shares, and what a family module is written against: `Family`,
`Choice`, `ReportSpec` (family), how families are found (registry), the user-error types (errors),
terminal tables (tables), size and shape strings of the configs (sizes, shapes), and the import
names kept for plugins and older code (names). Imports nothing else of hpcbench."""
