# The chat app, or the OpenAI-compatible API, in a container (README, Serving). Checkpoints stay outside the
# image: mount your out/ folder.
#   docker build -t gpt-py .
#   docker run --rm -p 8501:8501 -v "$PWD/out:/app/out:ro" gpt-py           # the app: http://localhost:8501
#   docker run --rm -p 8000:8000 -v "$PWD/out:/app/out:ro" gpt-py \
#       python serve.py --host=0.0.0.0 --ckpt=out/kjv_instruct/ckpt.pt        # the API: http://localhost:8000/v1
FROM python:3.11-slim

WORKDIR /app
# The requirements first, so that a change to the code reuses the installed packages from the build cache.
COPY requirements.txt .
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . .

# Not root: the servers only read checkpoints. Inside a container they must listen on 0.0.0.0, every
# interface, for a published port to reach them; outside one both default to localhost.
RUN useradd --create-home gpt
USER gpt
EXPOSE 8501 8000
CMD ["streamlit", "run", "chat_app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true", \
     "--browser.gatherUsageStats=false"]
