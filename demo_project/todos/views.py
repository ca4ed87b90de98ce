from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from demo_project.todos.models import TodoList


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "todos/index.html", {"lists": TodoList.objects.all()})
