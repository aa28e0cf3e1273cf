"""The dashboard: `streamlit run dashboard/app.py` (app), its data and charts (viz), a headless-browser driver (browser). Not part of the installed library: nothing in autospec imports it."""
