"""Instruction prompts for the causal-LM early-exit benchmark.

EVAL_PROMPTS are only ever used for measuring. TRAIN_PROMPTS are only used to make the model's own greedy
continuations for self-distillation of the exit heads (benchmarks/llm_selfdistill.py). The two lists share no
prompt; a test in tests/llm checks that.
"""

from __future__ import annotations

EVAL_PROMPTS: list[str] = [
    "What is the capital of France, and why is it famous?",
    "Explain in two sentences what photosynthesis is.",
    "List five fruits that are rich in vitamin C.",
    "Write a Python function that returns the factorial of n.",
    "What are the three states of matter?",
    "Give me three tips for sleeping better.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Who wrote the play Romeo and Juliet?",
    "List the planets of the solar system in order from the Sun.",
    "How do I make a cup of tea?",
    "What is the difference between weather and climate?",
    "Write a SQL query that selects all users older than 30 from a table named users.",
    "Name four primary colors used in painting and printing.",
    "Why is the sky blue?",
    "Write a short poem about the ocean.",
    "List three advantages of learning a second language.",
    "Write a JavaScript function that adds two numbers.",
    "What does a CPU do in a computer?",
    "Give a short definition of machine learning.",
    "List the days of the week.",
]

TRAIN_PROMPTS: list[str] = [
    "What is the capital of Japan?",
    "Explain what gravity is to a child.",
    "List five vegetables that grow well in cold climates.",
    "Write a Python function that reverses a list.",
    "What is the boiling point of water at sea level?",
    "Give me three tips for studying for an exam.",
    "Write a Python function that counts the vowels in a string.",
    "Who painted the Mona Lisa?",
    "List the continents of the world.",
    "How do I boil an egg?",
    "What is the difference between a virus and a bacterium?",
    "Write a SQL query that counts the rows in a table named orders.",
    "Name three famous rivers in Africa.",
    "Why do leaves change color in autumn?",
    "Write a short poem about the mountains.",
    "List three benefits of regular exercise.",
    "Write a JavaScript function that returns the largest number in an array.",
    "What does RAM do in a computer?",
    "Give a short definition of democracy.",
    "List the months of the year.",
    "What is the largest mammal on Earth?",
    "Explain what a noun is.",
    "List four musical instruments with strings.",
    "Write a Python function that computes the sum of a list of numbers.",
    "How many legs does a spider have?",
    "Give me three ideas for a healthy breakfast.",
    "Write a Python class for a bank account with deposit and withdraw methods.",
    "Who discovered penicillin?",
    "List five animals that live in the ocean.",
    "How do I plant a tree?",
    "What is the difference between a lake and a sea?",
    "Write a bash command that lists all files in a directory.",
    "Name three programming languages and what they are used for.",
    "Why do we have seasons on Earth?",
    "Write a short story about a lost cat in three sentences.",
    "List three ways to save energy at home.",
    "Write a Python function that returns the Fibonacci numbers up to n.",
    "What does an operating system do?",
    "Give a short definition of an algorithm.",
    "List the colors of the rainbow.",
]
