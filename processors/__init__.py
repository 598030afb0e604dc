"""MindBot."""
