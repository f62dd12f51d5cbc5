"""Views: how data is shown. Plain functions of plain data, and apply's event reporters (hooks).

    formats.py   the --format choices each command offers, declared once, and the JSON/Markdown helpers
    apply.py     apply's console view and its JSON event stream (`apply --format json`)

The plan's own renderers (text, JSON, Markdown) are in mlspec/render.py.
"""
