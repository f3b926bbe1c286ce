"""curate package."""
