"""Fleet roll-out over SSH (paramiko): push-install, enroll, upgrade, roll back, uninstall."""
