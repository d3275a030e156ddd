"""Ask and AskStream: answer a question from retrieved passages, with citations (see ``pipeline``)."""
