"""Split mode (`embedgate serve --http-workers N`): HTTP workers apart from the one model process."""
