"""memstack-ops: operate Docker Compose stacks of AI platforms (MemStack and friends).

Importing this package has no side effects and imports neither the docker SDK nor paramiko.
"""

__version__ = "0.1.0"
