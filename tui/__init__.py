"""The operator's Textual app; it calls only the public functions of collector and storage."""
