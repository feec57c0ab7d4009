"""Who takes a call: rules on CRM data (rules.py, pure), their reads (selectors.py), writes and
decisions (services.py) and their admin (admin.py)."""
