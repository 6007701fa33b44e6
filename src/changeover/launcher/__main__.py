"""``python -m changeover.launcher``, and the script PyInstaller freezes as
``changeover-launcher`` (``packaging/changeover-launcher.spec``)."""

from changeover.launcher.main import main

if __name__ == "__main__":
    main()
