"""``python -m quart_chat`` is the ``quart-chat`` command."""

from .cli import main

main()
