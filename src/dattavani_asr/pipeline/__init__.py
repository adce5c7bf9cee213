"""The core shared by every entry point: windows → transcript (run), the cross-request scheduler, live sessions."""
