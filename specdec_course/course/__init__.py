"""The course's machinery: checks and hidden checks, quizzes, exercises, grading, the set-up doctor, figures."""
