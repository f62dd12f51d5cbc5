"""mlspec-ray: the Ray backend of mlspec (``backend=ray``).

Importing this package is cheap: ``ray`` is imported only inside the backend's methods.
"""

__version__ = "0.1.0"
