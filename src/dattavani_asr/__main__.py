"""`python -m dattavani_asr`: the same as the dattavani-asr command."""

from .cli import main

if __name__ == "__main__":
    main()
