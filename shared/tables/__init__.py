"""The static table: keys and their codec, the table format and pointer, the build, the advisor."""
