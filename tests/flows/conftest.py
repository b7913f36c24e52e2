import subprocess


def git_init(root):
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "test"]):
        subprocess.run(cmd, cwd=root, check=True)
