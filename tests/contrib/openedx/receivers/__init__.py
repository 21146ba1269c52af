"""A Django app whose receiver of COURSE_ENROLLMENT_CREATED records what it was called with."""
