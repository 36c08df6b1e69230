"""``python -m hf_kd.generation``: see `hf_kd.generation.command`."""

from .command import main

if __name__ == "__main__":
    main()
