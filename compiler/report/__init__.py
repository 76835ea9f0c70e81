"""Views of the JSON reports: console tables, plots, the timeline, the HTML page."""
