"""Reporting from CSVs only: console tables, Markdown, figures and the regression gate. Nothing here measures."""
