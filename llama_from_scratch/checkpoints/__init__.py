"""Reading and writing weights: Meta's, Hugging Face's and llama2.c's formats, safely and without copies."""
