"""Classroom tooling: the student release and autograding with nbgrader (see README, "For teachers")."""
