"""The browser client's JavaScript unit tests (run in node here, in Chromium by tests/browser)."""
