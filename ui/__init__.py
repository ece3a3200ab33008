"""The app's parts that are not pages (pages/ holds only the pages app.py routes to).

- shell: the router's helpers on every page (deep links, CSS, icon, the shared sidebar);
- runs, live: the runs as the pages see them, and following running ones cheaply;
- widgets: widgets that keep their values, and the widgets of config fields;
- jobs, cached: the background worker as the pages use it, and cached data access;
- run_form, run_view, run_list: the Train page's new-run form, current run, and run list;
- explorer_map, map_points, mapview, explorer_panels, explorer_focus, over_training: the Embeddings page's
  map (controls, points and colours, drawing), its panels, and the space over training.
"""
