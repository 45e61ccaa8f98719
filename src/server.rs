//! The server: listeners, broker and shutdown wired together.
