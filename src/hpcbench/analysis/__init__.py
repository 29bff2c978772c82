"""Reading stored runs back: compare two runs with statistics, reports with plots."""
