"""Temporal workflows and activities: the story of one chat job."""
