"""Versions served side by side: what `model` resolves to, hot swap of the champion, compatible spaces
(`v0002@v0001`), the version header, and a Bento's model store."""
