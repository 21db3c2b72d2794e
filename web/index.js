// The index page: opens the tracker of the trip id typed in.
document.getElementById('track-go').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = document.getElementById('track-id').value.trim();
  if (id) location.href = '/track/' + encodeURIComponent(id);
});
